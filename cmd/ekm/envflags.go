package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// envName is the environment variable that can set a flag of the server
// and its operator tools: EKM_ + the flag name in upper snake case
// (--data-dir → EKM_DATA_DIR).
func envName(flag string) string { return envNameP(envPrefix, flag) }

// envPrefix is the prefix of the server's and operator tools' variables.
// The emulator uses emulatorEnvPrefix, so that variables exported for a
// production server (EKM_ADDR, EKM_DATA_DIR) never configure it.
const (
	envPrefix         = "EKM_"
	emulatorEnvPrefix = "EKM_EMULATOR_"
)

func envNameP(prefix, flag string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// documentEnv appends the environment variable to every flag's help text.
func documentEnv(fs *pflag.FlagSet) { documentEnvP(fs, envPrefix) }

func documentEnvP(fs *pflag.FlagSet, prefix string) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		f.Usage += " [env " + envNameP(prefix, f.Name) + "]"
	})
}

// applyEnv sets every flag not given on the command line from its
// environment variable, if set. A flag on the command line always wins, so
// what you type is what runs.
func applyEnv(fs *pflag.FlagSet) error { return applyEnvP(fs, envPrefix) }

func applyEnvP(fs *pflag.FlagSet, prefix string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil || f.Name == "help" {
			return
		}
		if v, ok := os.LookupEnv(envNameP(prefix, f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", envNameP(prefix, f.Name), e)
			}
		}
	})
	return err
}
