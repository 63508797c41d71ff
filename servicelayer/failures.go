package servicelayer

import "errors"

// ErrPermanent marks a failure that is the message's own fault (it cannot be
// encoded, a handler refuses it every time): retrying cannot help, so the
// delivery is parked for an operator. Any other failure is taken as
// transient (a dependency unreachable, a timeout) and retried for as long as
// it takes.
var ErrPermanent = errors.New("permanent failure")

// ErrNotDelivered: a delivery was not attempted because it is done, parked
// as dead, being delivered by someone else, or waiting for an earlier event of
// its product. It is no failure: whoever holds the turn will deliver it.
var ErrNotDelivered = errors.New("delivery not attempted")

// ErrUnavailable: a dependency (the database) cannot be reached. The request
// may succeed later; nothing was changed.
var ErrUnavailable = errors.New("service unavailable")

// ErrDuplicateMessage: an inbound message with this id was processed before.
var ErrDuplicateMessage = errors.New("message already processed")
