//! Placeholder: the apns channel is being written.
