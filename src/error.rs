//! One error type for the whole crate.

/// Everything that can go wrong in longseq. Bad input is reported here, never by a panic.
/// New variants may be added (non-exhaustive): match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter could be found (or none matched `LONGSEQ_ADAPTER`).
    #[error("no GPU adapter found{detail}; for a software adapter install lavapipe (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)")]
    NoAdapter {
        /// Appended to the message after "found" (empty when nothing more is known).
        detail: String,
    },
    /// The adapter refused the device request; wgpu's error is the source.
    #[error("adapter `{adapter}` refused the device request: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's message.
        message: String,
        /// wgpu's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A tensor has the wrong shape for an op.
    #[error("{op}: `{name}` has shape {got:?}, expected {expected}")]
    Shape {
        /// The op (or function) that refused its input.
        op: &'static str,
        /// The argument, tensor or option at fault.
        name: &'static str,
        /// The shape it needed, as a pattern (`[B, H, L, D]`) or a concrete shape.
        expected: String,
        /// The shape it had.
        got: Vec<usize>,
    },
    /// A host slice does not hold as many elements as the shape says.
    #[error("tensor data has {got} elements but shape {shape:?} needs {expected}")]
    DataLength {
        /// The shape given.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements the slice holds.
        got: usize,
    },
    /// A shape whose element count (or byte size) overflows.
    #[error("shape {shape:?} has more elements than fit in memory")]
    ShapeOverflow {
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// An option or argument is out of its valid range.
    #[error("{op}: invalid `{name}`: {reason}")]
    InvalidArgument {
        /// The op (or function) that refused its input.
        op: &'static str,
        /// The argument, tensor or option at fault.
        name: &'static str,
        /// Why, with the valid range.
        reason: String,
    },
    /// An index (a token id) is not below the size of the table it indexes.
    #[error("{op}: `{name}`{position:?} = {index} is out of range (must be < {bound})")]
    IndexOutOfRange {
        /// The op (or function) that refused its input.
        op: &'static str,
        /// The argument, tensor or option at fault.
        name: &'static str,
        /// Multi-index of the first bad element, e.g. `[b, l]`.
        position: Vec<usize>,
        /// The bad value.
        index: u64,
        /// The size of the table: valid values are below it.
        bound: u64,
    },
    /// NaN found where the NaN policy forbids it.
    #[error("{op}: `{name}` holds NaN at flat index {index} (NaN policy: error)")]
    NaN {
        /// The op (or function) that refused its input.
        op: &'static str,
        /// The argument, tensor or option at fault.
        name: String,
        /// Flat index of the first NaN.
        index: usize,
    },
    /// One slice of the work does not fit the device's storage-binding limit even after splitting.
    #[error("{op}: {what} needs {needed} bytes in one storage binding; the device allows {limit}")]
    TooLarge {
        /// The op (or function) that refused its input.
        op: &'static str,
        /// What did not fit (one row of an input, a scratch buffer).
        what: String,
        /// Bytes it needs in one binding.
        needed: u64,
        /// Bytes the device allows in one binding.
        limit: u64,
    },
    /// WGSL failed to parse, validate or build into a pipeline; wgpu's error, when there is one,
    /// is the source.
    #[error("shader `{shader}` (entry `{entry}`) failed to compile: {message}")]
    Shader {
        /// The shader's name (its file under `shaders/`).
        shader: String,
        /// The compute entry point.
        entry: String,
        /// What went wrong (wgpu's message, with the offending WGSL line).
        message: String,
        /// wgpu's validation error; `None` when the shader is not in the crate.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A tensor made by one [`crate::Context`] was used with another.
    #[error("{op}: `{name}` belongs to another Context")]
    WrongContext {
        /// The op (or function) that refused its input.
        op: &'static str,
        /// The argument, tensor or option at fault.
        name: &'static str,
    },
    /// The device reported an error (validation, out of memory, lost device, failed map); the
    /// wgpu error, when there is one, is the source.
    #[error("device error: {message}")]
    Device {
        /// The device's message.
        message: String,
        /// The wgpu error, when there is one.
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

/// wgpu's error as an [`Error`] source. On wasm32 wgpu's errors are neither `Send` nor `Sync`,
/// so there only the message (kept by the caller) survives.
pub(crate) fn wgpu_source(e: wgpu::Error) -> Option<Box<dyn std::error::Error + Send + Sync>> {
    #[cfg(not(target_arch = "wasm32"))]
    return Some(Box::new(e));
    #[cfg(target_arch = "wasm32")]
    {
        drop(e);
        None
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
