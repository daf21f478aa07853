// Command swdist is the one binary of swdist: the node daemon and the
// operator's command line. See README.md.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
