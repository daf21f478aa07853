//go:build !linux

package main

import "os/exec"

// dieWithParent is Linux only; elsewhere the tests' cleanups stop daemons.
func dieWithParent(*exec.Cmd) {}
