"""How much demo data to generate, and the limits those sizes must respect."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DemoSizes:
    """How much data to generate."""

    n_train: int = 2000
    n_patients: int = 400
    n_test: int = 600
    n_test_patients: int = 120
    malignant_ratio: float = 0.02
    n_isic2019: int = 600
    isic2019_mel_ratio: float = 0.18
    n_isic2018: int = 100
    n_isic2017: int = 40
    n_malignant: int = 60
    image_size: int = 128
    max_images_per_patient: int = 60

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name} must be >= 0")
        if self.n_patients < 1 or self.n_train < self.n_patients:
            raise ValueError("need 1 <= --n-patients <= --n-train")
        if self.n_test_patients < 1 or self.n_test < self.n_test_patients:
            raise ValueError("need 1 <= --n-test-patients <= --n-test")
        if self.n_test > self.n_test_patients * self.max_images_per_patient:
            raise ValueError(f"--n-test > --n-test-patients * {self.max_images_per_patient}")
        if not 10 <= self.n_isic2019 <= 20_000 or self.n_isic2018 > 5000 or self.n_isic2017 > 5000:
            raise ValueError(
                "need 10 <= --n-isic2019 <= 20000, --n-isic2018 and --n-isic2017 <= 5000"
            )
        if self.n_train > self.n_patients * self.max_images_per_patient:
            raise ValueError(f"--n-train > --n-patients * {self.max_images_per_patient}")
        if not 0 < self.malignant_ratio < 0.5 or not 0 < self.isic2019_mel_ratio < 1:
            raise ValueError(
                "--malignant-ratio must be in (0, 0.5), --isic2019-mel-ratio in (0, 1)"
            )
        if self.image_size < 32:
            raise ValueError("--image-size must be >= 32")
