//! Placeholder: the web_push channel is being written.
