"""Repository maintenance: consistency checks, garbage collection, statistics."""
