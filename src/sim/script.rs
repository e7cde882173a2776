//! Scenario scripts (placeholder).
