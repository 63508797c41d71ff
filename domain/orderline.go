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
	l := OrderLine{OrderID: orderID, SKU: sku, Qty: qty}
	if err := l.validate(); err != nil {
		return OrderLine{}, err
	}
	return l, nil
}

// validate applies NewOrderLine's rules; the fields are exported, so a line
// built as a literal is checked again where it could change stock.
func (l OrderLine) validate() error {
	if err := validateReference("orderid", l.OrderID); err != nil {
		return err
	}
	if err := validateReference("sku", l.SKU); err != nil {
		return err
	}
	return validateQuantity("qty", l.Qty, 1)
}
