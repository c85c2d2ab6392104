package tandem

// AssertInvariant lets the external tests (package tandem_test) end as the composition tests
// do: shut down, and every accepted event settled, every buffer back with its owner.
var AssertInvariant = assertInvariant
