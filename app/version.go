package app

import (
	"runtime/debug"
	"strings"
)

// version is set at build time:
//
//	go build -ldflags "-X github.com/ekm-dev/ekm/app.version=v1.2.3" ./cmd/ekm
var version string

// Version is ekm's version: the one set at build time, else the module
// version of an installed binary (go install …@v1.2.3), else the commit it
// was built from (with "+dirty" for uncommitted changes), else "dev".
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	return "dev-" + rev[:min(12, len(rev))] + dirty
}

// VersionLine is `ekm version`'s output: the version and the Go toolchain.
func VersionLine() string {
	bi, _ := debug.ReadBuildInfo()
	goVersion := ""
	if bi != nil {
		goVersion = bi.GoVersion
	}
	return strings.TrimSpace("ekm " + Version() + " " + goVersion)
}
