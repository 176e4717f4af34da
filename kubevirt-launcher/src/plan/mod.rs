//! Launch plans (being written).
