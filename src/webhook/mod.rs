//! Webhook signing, delivery, retries and dead letters.
