"""The `refcal_calibration` evaluate module; present so the folder ships in wheels. Do not import evaluate here."""
