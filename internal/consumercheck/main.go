// Command tetherconsumer is a module that uses tether as an application
// would: the client and one store. make test checks its module graph, so
// that tether's test-only dependencies never reach its users.
package main

import (
	"fmt"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/store/bolt"
)

func main() {
	st, err := bolt.Open("consumer.db", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	c, err := client.New(client.Config{Servers: []string{"mqtt://127.0.0.1:1883"}, ClientID: "consumer", Store: st})
	if err != nil {
		fmt.Println(err)
		return
	}
	c.Close()
}
