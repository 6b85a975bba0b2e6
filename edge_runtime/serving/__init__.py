"""Serving: the KServe v2 client backend (remote pose server), the KServe server and the OVMS repository.
The only room that imports the `serve` extra (kserve, tritonclient), and only here."""
