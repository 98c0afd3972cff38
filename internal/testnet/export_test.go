package testnet

// HasFieldsOption reports whether the oracle can read the text views.
func (o *Oracle) HasFieldsOption() bool { return o.hasFieldsOption() }

// ReadBoth reads the recording through the text views, then through the
// binary buffers (a consuming read, so last).
func (o *Oracle) ReadBoth() (text, raw []OracleEvent, err error) {
	if text, err = o.Events(); err != nil {
		return nil, nil, err
	}
	raw, err = o.readRaw()
	return text, raw, err
}
