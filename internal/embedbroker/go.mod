module github.com/tethermq/tether/internal/embedbroker

go 1.26.8

require (
	github.com/mochi-mqtt/server/v2 v2.7.9
	github.com/tethermq/tether v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
)

require (
	github.com/gorilla/websocket v1.5.0 // indirect
	github.com/rs/xid v1.4.0 // indirect
)

replace github.com/tethermq/tether => ../..
