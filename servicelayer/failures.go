package servicelayer

import "errors"

// ErrPermanent marks a failure that is the message's own fault (it cannot be
// encoded, a handler refuses it every time): retrying cannot help, so the
// delivery is parked for an operator. Any other failure is taken as
// transient (a dependency unreachable, a timeout) and retried for as long as
// it takes.
var ErrPermanent = errors.New("permanent failure")
