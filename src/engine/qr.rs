//! The QR string rendered as a PNG (for `GET …/auth/qr`).

use image::Luma;
use qrcode::QrCode;

/// Why a QR could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The string does not fit in a QR code.
    #[error("QR encoding failed: {0}")]
    Encode(#[from] qrcode::types::QrError),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] image::ImageError),
}

/// Renders `value` as a black-on-white PNG with a quiet zone, about 8 pixels per module
/// (large enough for a phone camera on a screen).
pub fn qr_png(value: &str) -> Result<Vec<u8>, QrError> {
    let code = QrCode::new(value.as_bytes())?;
    let image = code
        .render::<Luma<u8>>()
        .module_dimensions(8, 8)
        .quiet_zone(true)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_decodable_png_of_the_right_size() {
        let value = "2@AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIj,a2V5MQ==,a2V5Mg==,YWR2,WEB";
        let png = qr_png(value).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        let code = QrCode::new(value.as_bytes()).unwrap();
        // width = (modules + 2 * 4 quiet zone) * 8 pixels
        let expected = (code.width() as u32 + 8) * 8;
        assert_eq!(img.width(), expected);
        assert_eq!(img.height(), expected);
        // The quiet zone is white and the top-left finder pattern is black.
        assert_eq!(img.get_pixel(0, 0)[0], 255);
        assert_eq!(img.get_pixel(4 * 8 + 1, 4 * 8 + 1)[0], 0);
    }
}
