package embeddedredis

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2/server"
)

// miniredis answers XREAD and XREADGROUP with the RESP2 shape whatever the
// protocol a client asked for: an array of [stream, entries] pairs, and a
// null array when nothing came. Redis answers a RESP3 client (HELLO 3) with
// a map of stream to entries and a RESP3 null, and RESP3 clients depend on
// it (ioredis 6: "entries is not iterable"). The server's pre-hook runs
// those commands against a peer that writes into a buffer, then rewrites
// the reply's top level for RESP3 clients.

// resp3Fixes are the commands whose reply a RESP3 client gets rewritten,
// with the rewrite.
var resp3Fixes = map[string]func([]byte) ([]byte, error){
	"XREAD":      streamsAsMap,
	"XREADGROUP": streamsAsMap,
}

// resp3Hook returns the pre-hook that fixes the replies to RESP3 clients.
func resp3Hook(srv *server.Server) server.Hook {
	var mu sync.Mutex
	capturing := map[*server.Peer]bool{} // peers of the hook's own dispatches
	return func(c *server.Peer, cmd string, args ...string) bool {
		fix, ok := resp3Fixes[cmd]
		mu.Lock()
		inner := capturing[c]
		mu.Unlock()
		if !ok || !c.Resp3 || inner {
			return false
		}
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		capture := server.NewPeer(w)
		capture.Resp3, capture.Ctx, capture.ClientName = true, c.Ctx, c.ClientName
		mu.Lock()
		capturing[capture] = true
		mu.Unlock()
		done := make(chan struct{})
		go closeWith(c, capture, done)
		srv.Dispatch(capture, append([]string{cmd}, args...))
		close(done)
		mu.Lock()
		delete(capturing, capture)
		mu.Unlock()
		c.Ctx = capture.Ctx // the connection's state, created on its first command
		if err := w.Flush(); err != nil {
			c.WriteError("ERR embedded redis: " + err.Error())
			return true
		}
		reply, err := fix(buf.Bytes())
		if err != nil {
			c.WriteError("ERR embedded redis: " + err.Error())
			return true
		}
		c.WriteRaw(string(reply))
		return true
	}
}

// closeWith closes capture once c is closed, until done: a blocked read for
// a client that went away ends at the next write to the server, as it
// would without the hook, rather than taking an entry for nobody.
func closeWith(c, capture *server.Peer, done <-chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			if c.Closed() {
				capture.Close()
				return
			}
		}
	}
}

// streamsAsMap turns an XREAD reply from an array of [stream, entries]
// pairs into a map of stream to entries, and a null array into a null.
// Anything else (an error, QUEUED inside MULTI) is left as it is.
func streamsAsMap(reply []byte) ([]byte, error) {
	if len(reply) == 0 || reply[0] != '*' {
		return reply, nil
	}
	n, i, err := header(reply, 0)
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return []byte("_\r\n"), nil
	}
	out := []byte("%" + strconv.Itoa(n) + "\r\n")
	for range n {
		pair, j, err := header(reply, i)
		if err != nil || reply[i] != '*' || pair != 2 {
			return nil, errors.New("XREAD reply: want [stream, entries] pairs")
		}
		end, err := skip(reply, j) // the stream's name
		if err == nil {
			end, err = skip(reply, end) // its entries
		}
		if err != nil {
			return nil, err
		}
		out = append(out, reply[j:end]...)
		i = end
	}
	if i != len(reply) {
		return nil, errors.New("XREAD reply: data after the reply")
	}
	return out, nil
}

// header reads the type line at b[i:], and returns its number (length or
// count; 0 for a simple value) and where the value's body starts.
func header(b []byte, i int) (n, body int, err error) {
	end := bytes.Index(b[i:], []byte("\r\n"))
	if end < 1 {
		return 0, 0, errors.New("truncated RESP reply")
	}
	line := b[i+1 : i+end]
	switch b[i] {
	case '$', '=', '!', '*', '~', '>', '%', '|':
		n, err = strconv.Atoi(string(line))
	}
	return n, i + end + 2, err
}

// skip returns where the RESP value at b[i:] ends.
func skip(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("truncated RESP reply")
	}
	n, j, err := header(b, i)
	if err != nil {
		return 0, err
	}
	switch b[i] {
	case '$', '=', '!':
		if n < 0 {
			return j, nil
		}
		if j+n+2 > len(b) {
			return 0, errors.New("truncated RESP reply")
		}
		return j + n + 2, nil
	case '%', '|':
		n *= 2
		fallthrough
	case '*', '~', '>':
		for range max(n, 0) {
			if j, err = skip(b, j); err != nil {
				return 0, err
			}
		}
	}
	return j, nil
}
