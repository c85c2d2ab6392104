package abi

// Placeholder until the ABI v2 header lands (tandem_delivery).
const (
	DeliveryHeaderSize = 16
	DeliveryDeadline   = 0
	DeliveryAttempt    = 8
	DeliveryFlags      = 12
)
