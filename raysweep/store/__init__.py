"""The node store: every node key and digest (keys), local folders and object stores with one
atomic write (storage), nodes written, verified and loaded (nodes), one trainer per item (leases)."""
