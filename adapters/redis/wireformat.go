package redis

import "allocation/servicelayer"

// Encode returns the channel env goes out on and the JSON body Publish
// sends there (and appends to the stream of that name as its data field).
// Tests hold it to the published contract (asyncapi.json).
func Encode(env servicelayer.Envelope) (channel string, body []byte, err error) {
	return encode(env)
}
