//! The WhatsApp Web engine: chromiumoxide driving Chromium and the page adapter in `assets/wa/`.
