//! Choosing where and in what precision the engine computes: CUDA, then Metal, then CPU unless
//! the user says otherwise, and only dtypes the device handles.

use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result, Setting};

/// The device the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
                return Err(Error::setting(
                    Setting::Device,
                    format!("{other:?} is unknown; choose auto, cpu, cuda or metal"),
                ))
            }
        })
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Metal => "metal",
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
                    return Err(Error::setting(
                        Setting::Device,
                        "cuda is not in this build of Easel; rebuild it with the `cuda` feature",
                    ));
                }
                Device::new_cuda(0)
                    .map_err(|e| Error::setting(Setting::Device, format!("cuda: no usable CUDA GPU ({e})")))
            }
            DeviceChoice::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(Error::setting(
                        Setting::Device,
                        "metal is not in this build of Easel; rebuild it with the `metal` feature",
                    ));
                }
                Device::new_metal(0)
                    .map_err(|e| Error::setting(Setting::Device, format!("metal: no usable Metal GPU ({e})")))
            }
        }
    }
}

/// The precision weights are loaded and computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats: exact, 4 bytes a weight.
    #[default]
    F32,
    /// 16-bit floats: half the memory.
    F16,
    /// bfloat16: half the memory, f32's range; fastest on CPUs with AVX-512 BF16.
    Bf16,
}

impl Precision {
    /// Every precision, in menu order.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// The spelling in flags, settings files and metadata.
    pub fn id(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// The candle dtype on `device`, refusing one the device cannot compute in.
    pub fn dtype_on(self, device: &Device) -> Result<DType> {
        let dtype = match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        };
        if dtype == DType::BF16 && device.is_metal() {
            return Err(Error::setting(Setting::Precision, "bf16 is not supported on Metal; use f16"));
        }
        Ok(dtype)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Precision::ALL.into_iter().find(|p| p.id() == s).ok_or_else(|| {
            Error::setting(Setting::Precision, format!("{s:?} is unknown; choose f32, f16 or bf16"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precisions_read_and_write_their_short_names() {
        for p in Precision::ALL {
            assert_eq!(p.id().parse::<Precision>().expect("parses"), p);
            assert_eq!(serde_json::to_string(&p).expect("serialises"), format!("\"{}\"", p.id()));
        }
        let err = "f64".parse::<Precision>().expect_err("unknown").to_string();
        assert!(err.starts_with("precision \"f64\" is unknown"), "{err}");
        assert_eq!(Precision::Bf16.dtype_on(&Device::Cpu).expect("cpu"), DType::BF16);
    }
}
