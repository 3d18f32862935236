// Command natsserver is the nats-server of the module version this project
// requires (github.com/nats-io/nats-server/v2), built by the tests that must
// kill a current server rather than stop an embedded one. It takes
// nats-server's own flags (-a, -p, -js, -sd, -c, -l, ...).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	fs := flag.NewFlagSet("nats-server", flag.ExitOnError)
	opts, err := server.ConfigureOptions(fs, os.Args[1:],
		func() { fmt.Println(server.VERSION); os.Exit(0) },
		func() { fs.PrintDefaults(); os.Exit(0) },
		func() {})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsserver:", err)
		os.Exit(2)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsserver:", err)
		os.Exit(1)
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		fmt.Fprintln(os.Stderr, "natsserver:", err)
		os.Exit(1)
	}
	s.WaitForShutdown()
}
