"""mantis_client: fire-and-forget `append(row)` to mantisd, with a direct-write fallback."""
