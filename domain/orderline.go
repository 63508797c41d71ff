package domain

// OrderLine is a value: two lines with the same order, SKU and quantity are the
// same line, so allocating one twice is allocating it once.
type OrderLine struct {
	OrderID string
	SKU     string
	Qty     int
}

// NewOrderLine refuses empty references and quantities outside 1..MaxQuantity.
func NewOrderLine(orderID, sku string, qty int) (OrderLine, error) {
	if err := validateReference("orderid", orderID); err != nil {
		return OrderLine{}, err
	}
	if err := validateReference("sku", sku); err != nil {
		return OrderLine{}, err
	}
	if err := validateQuantity("qty", qty, 1); err != nil {
		return OrderLine{}, err
	}
	return OrderLine{OrderID: orderID, SKU: sku, Qty: qty}, nil
}
