package faultproxy_test

import (
	"fmt"
	"log"

	"github.com/tethermq/tether/faultproxy"
	"github.com/tethermq/tether/packets"
)

// A test puts the proxy between the client and the broker, arms a fault,
// and waits for it to fire.
func Example() {
	brokerAddr := "127.0.0.1:1883" // the broker the test started
	p, err := faultproxy.Start(brokerAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// Let the client's first PUBREL reach the broker, then cut the
	// connection before the PUBCOMP can come back.
	inj := p.Inject(faultproxy.Fault{
		Dir:    faultproxy.ServerToClient,
		Type:   packets.PUBCOMP,
		Nth:    1,
		Action: faultproxy.CutBefore,
	})
	fmt.Println("connect the client to", p.URL())
	// ... publish at QoS 2 through the client ...
	<-inj.Fired()

	// While the broker is "down", the client's reconnects are refused.
	p.SetRefuse(true)
	// ... check the client's state ...
	p.SetRefuse(false)
}
