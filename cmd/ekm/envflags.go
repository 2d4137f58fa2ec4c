package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// envName is the environment variable that can set a flag: EKM_ + the flag
// name in upper snake case (--data-dir → EKM_DATA_DIR).
func envName(flag string) string {
	return "EKM_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// documentEnv appends the environment variable to every flag's help text.
func documentEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		f.Usage += " [env " + envName(f.Name) + "]"
	})
}

// applyEnv sets every flag not given on the command line from its
// environment variable, if set. A flag on the command line always wins, so
// what you type is what runs.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil || f.Name == "help" {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", envName(f.Name), e)
			}
		}
	})
	return err
}
