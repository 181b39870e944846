//! Choosing where and in what precision the engine computes: CUDA, then Metal, then CPU unless
//! the user says otherwise, and only dtypes the device handles.

use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// The device the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The best available: CUDA, then Metal, then CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// The Metal GPU.
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "cuda" => DeviceChoice::Cuda,
            "metal" => DeviceChoice::Metal,
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown device {other:?}; choose auto, cpu, cuda or metal"
                )))
            }
        })
    }
}

impl DeviceChoice {
    /// Opens the device, or says why it cannot be used.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok(d);
                    }
                }
                if candle_core::utils::metal_is_available() {
                    if let Ok(d) = Device::new_metal(0) {
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
            DeviceChoice::Cuda => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::BadRequest(
                        "--device cuda: this build of Easel has no CUDA support; rebuild with `--features cuda`".into(),
                    ));
                }
                Device::new_cuda(0)
                    .map_err(|e| Error::BadRequest(format!("--device cuda: no usable CUDA GPU ({e})")))
            }
            DeviceChoice::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(Error::BadRequest(
                        "--device metal: this build of Easel has no Metal support; rebuild with `--features metal`".into(),
                    ));
                }
                Device::new_metal(0)
                    .map_err(|e| Error::BadRequest(format!("--device metal: no usable Metal GPU ({e})")))
            }
        }
    }
}

/// Parses `f32`, `f16` or `bf16` and checks the device can compute in it.
pub fn parse_dtype(s: &str, device: &Device) -> Result<DType> {
    let dtype = match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => return Err(Error::BadRequest(format!("unknown dtype {other:?}; choose f32, f16 or bf16"))),
    };
    if dtype == DType::BF16 && device.is_metal() {
        return Err(Error::BadRequest("--dtype bf16 is not supported on Metal; use f16".into()));
    }
    Ok(dtype)
}
