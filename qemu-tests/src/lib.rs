//! The VM tier lives in tests/vm; see ../ARCHITECTURE.md.
