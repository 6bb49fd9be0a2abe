module example.com/tetherconsumer

go 1.26.8

require github.com/tethermq/tether v0.0.0

require (
	github.com/coder/websocket v1.8.15 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/tethermq/tether => ../..
