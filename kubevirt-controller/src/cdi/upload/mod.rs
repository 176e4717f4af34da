//! CDI's upload: a DataVolume with `source: {upload: {}}` gets a `cdi-upload-<dv>` pod running
//! [`server`] (`kubevirt-controller cdi-uploadserver`) with its claim mounted; a client asks
//! for a [`token`] (`UploadTokenRequest`, `upload.cdi.kubevirt.io`) and sends the image to the
//! upload proxy ([`proxy`]), which checks the token and streams the body to that pod. The pod
//! feeds it through the importer's pipeline ([`crate::cdi::import`]: unwrapping, qemu-img) into
//! the claim, writes the termination message and exits; the DataVolume then Succeeds.

pub mod api;
pub mod channel;
pub mod cli;
pub mod pvc;
pub mod server;
pub mod token;

/// The upload server's port in its pod (plain HTTP on the pod network, like the importer's
/// metrics; the proxy is the only client).
pub const PORT: u16 = 8443;
/// The upload server's paths (upstream's): synchronous and asynchronous uploads.
pub const UPLOAD_PATHS: [&str; 2] = ["/v1beta1/upload", "/v1beta1/upload-async"];
