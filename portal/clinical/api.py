"""The intake API (X-5): POST /api/v1/records and its OpenAPI description."""
