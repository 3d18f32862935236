// Package testpb holds protocol buffer messages for the tests and
// benchmarks of the codec package and its users. order.pb.go is generated
// from order.proto and committed; regenerate it with go generate (it needs
// protoc and protoc-gen-go on PATH).
package testpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative order.proto
