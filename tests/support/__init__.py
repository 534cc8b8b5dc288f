"""Test and benchmark support: throwaway databases, a served dashboard, headless Chromium."""
