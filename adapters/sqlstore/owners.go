package sqlstore

// MaxCachedOwners bounds the batch-to-product cache: a batch never changes
// product, so what was found once is remembered, up to this many.
const MaxCachedOwners = 10_000
