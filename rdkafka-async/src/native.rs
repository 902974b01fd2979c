//! The one owner of raw librdkafka handles.
//!
//! Every C object this crate holds lives in a [`NativePtr`], whose `Drop` calls the
//! destroy function named by the object's [`Destroy`] impl: each handle is freed in
//! exactly one place.

use std::fmt;
use std::ptr::NonNull;

use crate::sys;

/// A librdkafka object type and the C function that frees it.
///
/// # Safety
///
/// `destroy` must be the function that releases an object of this type that the caller
/// owns, and it must be safe to call from any thread.
pub(crate) unsafe trait Destroy {
    /// Frees `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid, owned object of this type; it is not used afterwards.
    unsafe fn destroy(ptr: *mut Self);
}

macro_rules! destroy_with {
    ($($ty:ty => $f:path),* $(,)?) => {$(
        // SAFETY: `$f` is librdkafka's destructor for `$ty`; librdkafka's destructors
        // may be called from any thread.
        unsafe impl Destroy for $ty {
            unsafe fn destroy(ptr: *mut Self) {
                // SAFETY: the caller passes an owned, valid object (trait contract).
                unsafe { $f(ptr) }
            }
        }
    )*};
}

destroy_with! {
    sys::rd_kafka_t => sys::rd_kafka_destroy,
    sys::rd_kafka_conf_t => sys::rd_kafka_conf_destroy,
    sys::rd_kafka_queue_t => sys::rd_kafka_queue_destroy,
    sys::rd_kafka_event_t => sys::rd_kafka_event_destroy,
    sys::rd_kafka_message_t => sys::rd_kafka_message_destroy,
    sys::rd_kafka_topic_t => sys::rd_kafka_topic_destroy,
    sys::rd_kafka_topic_partition_list_t => sys::rd_kafka_topic_partition_list_destroy,
    sys::rd_kafka_error_t => sys::rd_kafka_error_destroy,
    sys::rd_kafka_AdminOptions_t => sys::rd_kafka_AdminOptions_destroy,
    sys::rd_kafka_NewTopic_t => sys::rd_kafka_NewTopic_destroy,
    sys::rd_kafka_DeleteTopic_t => sys::rd_kafka_DeleteTopic_destroy,
    sys::rd_kafka_ConfigResource_t => sys::rd_kafka_ConfigResource_destroy,
    sys::rd_kafka_mock_cluster_t => sys::rd_kafka_mock_cluster_destroy,
}

// SAFETY: `rd_kafka_metadata_destroy` frees what `rd_kafka_metadata` returned.
unsafe impl Destroy for sys::rd_kafka_metadata_t {
    unsafe fn destroy(ptr: *mut Self) {
        // SAFETY: trait contract: `ptr` came from `rd_kafka_metadata` and is owned.
        unsafe { sys::rd_kafka_metadata_destroy(ptr) }
    }
}

/// An owned, non-null pointer to a librdkafka object, freed on drop.
pub(crate) struct NativePtr<T: Destroy> {
    ptr: NonNull<T>,
}

/// librdkafka objects that its documentation lets several threads use at once: the
/// client handle, its topic handles and its queues ("all librdkafka APIs are thread safe"
/// for `rd_kafka_t`; queues are locked internally), the mock cluster (its own thread serves it under a
/// lock), and a message, which this crate only reads once it is handed out. Everything
/// else (configurations, partition lists, admin requests, events, errors, metadata) is
/// owned by one thread at a time: `Send`, not `Sync`.
///
/// # Safety
///
/// Only for types whose every C function this crate calls through a shared reference
/// is thread safe.
pub(crate) unsafe trait ThreadSafe {}

// SAFETY: documented thread safe (see the trait).
unsafe impl ThreadSafe for sys::rd_kafka_t {}
// SAFETY: as above.
unsafe impl ThreadSafe for sys::rd_kafka_queue_t {}
// SAFETY: as above.
unsafe impl ThreadSafe for sys::rd_kafka_mock_cluster_t {}
// SAFETY: a topic handle is refcounted and locked inside librdkafka; producing through
// it from several threads is its documented use.
unsafe impl ThreadSafe for sys::rd_kafka_topic_t {}
// SAFETY: read only once handed out (see the trait).
unsafe impl ThreadSafe for sys::rd_kafka_message_t {}

// SAFETY: librdkafka objects have no thread affinity: any thread may use or free one it
// owns.
unsafe impl<T: Destroy> Send for NativePtr<T> {}
// SAFETY: only for the types librdkafka lets threads share (`ThreadSafe`).
unsafe impl<T: Destroy + ThreadSafe> Sync for NativePtr<T> {}

impl<T: Destroy> NativePtr<T> {
    /// Takes ownership of `ptr`; `None` if it is null.
    ///
    /// # Safety
    ///
    /// A non-null `ptr` must be a valid object of type `T` that the caller owns and that
    /// `T::destroy` may free.
    pub(crate) unsafe fn from_ptr(ptr: *mut T) -> Option<Self> {
        NonNull::new(ptr).map(|ptr| Self { ptr })
    }

    /// The raw pointer, still owned by `self`.
    pub(crate) fn ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Gives up ownership without freeing (for calls that take ownership).
    pub(crate) fn into_raw(self) -> *mut T {
        let ptr = self.ptr.as_ptr();
        std::mem::forget(self);
        ptr
    }
}

impl<T: Destroy> Drop for NativePtr<T> {
    fn drop(&mut self) {
        // SAFETY: `self` owns the object (constructor contract) and drops it once.
        unsafe { T::destroy(self.ptr.as_ptr()) }
    }
}

impl<T: Destroy> fmt::Debug for NativePtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NativePtr({:p})", self.ptr)
    }
}

/// Converts a C string owned by librdkafka to an owned `String` (lossy); `""` for null.
pub(crate) fn cstr_to_string(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live at least as long as
    // the object they were read from, which the caller holds.
    unsafe { std::ffi::CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// Copies `len` bytes at `ptr` (null or empty gives `None`) into a borrowed slice.
///
/// # Safety
///
/// A non-null `ptr` must point to `len` readable bytes that live for `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: caller contract.
        Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }
}
