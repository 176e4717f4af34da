//! Image pulls with `imagePullPolicy`.

mod pull;

pub use pull::{PullError, ensure_image, pull_policy};
