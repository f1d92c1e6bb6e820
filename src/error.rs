//! One error type for the whole crate.

/// Everything that can go wrong in longseq. Bad input is reported here, never by a panic.
/// New variants may be added (non-exhaustive): match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter could be found (or none matched `LONGSEQ_ADAPTER`).
    #[error("no GPU adapter found{detail}; for a software adapter install lavapipe (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)")]
    NoAdapter { detail: String },
    /// The adapter refused the device request.
    #[error("adapter `{adapter}` refused the device request: {message}")]
    RequestDevice { adapter: String, message: String },
    /// A tensor has the wrong shape for an op.
    #[error("{op}: `{name}` has shape {got:?}, expected {expected}")]
    Shape {
        op: &'static str,
        name: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    /// A host slice does not hold as many elements as the shape says.
    #[error("tensor data has {got} elements but shape {shape:?} needs {expected}")]
    DataLength {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    /// A shape whose element count (or byte size) overflows.
    #[error("shape {shape:?} has more elements than fit in memory")]
    ShapeOverflow { shape: Vec<usize> },
    /// An option or argument is out of its valid range.
    #[error("{op}: invalid `{name}`: {reason}")]
    InvalidArgument {
        op: &'static str,
        name: &'static str,
        reason: String,
    },
    /// An index (a token id) is not below the size of the table it indexes.
    #[error("{op}: `{name}`{position:?} = {index} is out of range (must be < {bound})")]
    IndexOutOfRange {
        op: &'static str,
        name: &'static str,
        /// Multi-index of the first bad element, e.g. `[b, l]`.
        position: Vec<usize>,
        index: u64,
        bound: u64,
    },
    /// NaN found where the NaN policy forbids it.
    #[error("{op}: `{name}` holds NaN at flat index {index} (NaN policy: error)")]
    NaN {
        op: &'static str,
        name: String,
        index: usize,
    },
    /// One slice of the work does not fit the device's storage-binding limit even after splitting.
    #[error("{op}: {what} needs {needed} bytes in one storage binding; the device allows {limit}")]
    TooLarge {
        op: &'static str,
        what: String,
        needed: u64,
        limit: u64,
    },
    /// WGSL failed to parse, validate or build into a pipeline.
    #[error("shader `{shader}` (entry `{entry}`) failed to compile: {message}")]
    Shader {
        shader: String,
        entry: String,
        message: String,
    },
    /// A tensor made by one [`crate::Context`] was used with another.
    #[error("{op}: `{name}` belongs to another Context")]
    WrongContext {
        op: &'static str,
        name: &'static str,
    },
    /// The device reported an error (validation, out of memory, lost device, failed map); the
    /// wgpu error, when there is one, is the source.
    #[error("device error: {message}")]
    Device {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

impl Error {
    /// [`Error::Device`] carrying `e` as its source.
    pub(crate) fn device(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Device {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
