"""FHIR R4 at carehub's edge: Bundles in (validation, mapping to care events), notifications out."""
