//! URL revisions (placeholder, filled below).
