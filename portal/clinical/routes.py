"""Pages over the source data: patients and events."""
