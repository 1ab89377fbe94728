"""SalesETL's callable packages."""
