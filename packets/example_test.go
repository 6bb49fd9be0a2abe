package packets_test

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/tethermq/tether/packets"
)

func Example() {
	b, err := packets.Append(nil, &packets.Publish{
		QoS: 1, PacketID: 7, Topic: "greetings",
		Properties: packets.Properties{ContentType: "text/plain"},
		Payload:    []byte("hello"),
	})
	if err != nil {
		panic(err)
	}
	r := packets.NewReader(bytes.NewReader(b), 1024)
	p, _ := r.Read()
	pub := p.(*packets.Publish)
	fmt.Println(p.Type(), pub.Topic, pub.Properties.ContentType, string(pub.Payload))

	// A PUBACK carrying a reason code no PUBACK may carry.
	_, err = packets.Decode([]byte{0x40, 0x03, 0x00, 0x07, 0x04}, 0)
	fmt.Println(errors.Is(err, packets.ErrProtocol), packets.CodeOf(err))
	// Output:
	// PUBLISH greetings text/plain hello
	// true Protocol Error
}
