"""Data: public formats in (formats), data set specs (spec), modality encoders (encoders), the processed data set
on disk (processed), the leave-one-out protocol and batching (protocol), and the synthetic generator (synthetic)."""
