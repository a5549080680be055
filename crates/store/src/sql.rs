//! Batch statements: how many rows one multi-row statement carries.

/// Statement sizes (rows per multi-row insert). Batches are cut into these
/// sizes so that the database prepares a bounded set of statements once and
/// reuses them, instead of compiling one for every batch length. Every size up
/// to 16 is there, so a typical batch takes one statement.
pub(crate) const SIZES: [usize; 20] = [
    256, 128, 64, 32, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1,
];

/// Cuts `items` into chunks whose lengths are all in [`SIZES`].
pub(crate) fn chunks_of_known_size<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let size = SIZES
            .iter()
            .copied()
            .find(|s| *s <= items.len())
            .unwrap_or(1);
        let (chunk, rest) = items.split_at(size);
        out.push(chunk);
        items = rest;
    }
    out
}
