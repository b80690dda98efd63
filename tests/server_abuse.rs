//! Hostile clients against a real server (filled below).
