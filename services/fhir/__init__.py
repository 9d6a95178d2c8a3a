"""The FHIR R4 door: message and transaction Bundles in over HTTPS, care events out."""
