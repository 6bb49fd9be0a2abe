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

func ExampleValidTopicFilter() {
	for _, f := range []string{"sensors/+/temperature", "sensors/#/x", "$share/group/a/#", "$share//a"} {
		fmt.Println(f, packets.ValidTopicFilter(f))
	}
	// Output:
	// sensors/+/temperature <nil>
	// sensors/#/x packets: invalid topic filter: # not the last level
	// $share/group/a/# <nil>
	// $share//a packets: invalid topic filter: empty share name
}

func ExampleProperties_SetPresent() {
	var pr packets.Properties
	pr.SetPresent(packets.PropPayloadFormat) // "unspecified bytes", said explicitly
	b, _ := packets.Append(nil, &packets.Publish{Topic: "t", Properties: pr})
	p, _ := packets.Decode(b, 0)
	got := p.(*packets.Publish).Properties
	fmt.Printf("% X\n", b)
	fmt.Println(got.Has(packets.PropPayloadFormat), got.PayloadFormat)
	// Output:
	// 30 06 00 01 74 02 01 00
	// true 0
}
