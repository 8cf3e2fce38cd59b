"""Adapters to third-party services and formats (Alimtalk, weather, Volcano RTC tokens)."""
