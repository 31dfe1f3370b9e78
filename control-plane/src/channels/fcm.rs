//! Placeholder: the fcm channel is being written.
