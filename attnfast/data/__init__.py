"""Datasets and text handling: the built-in shapes dataset, AttnGAN's CUB/COCO layout, caption
folders, the vocabulary, image grids."""
from .grid import make_grid_image, save_image_grid, to_uint8_images
from .shapes import (
    BACKGROUNDS, COLOURS, GRIDS, MAX_CAPTION_WORDS, NUM_CLASSES, POSITIONS, SHAPES, SIZES, WORD_CLASSES,
    Scene, ShapeObject, ShapesDataset, caption_word_objects, class_id_of, collate_shapes, make_captions, object_mask_for_word,
    grid_positions, parse_background, parse_caption, render_scene, sample_scene, shapes_vocabulary,
    to_tensor,
)
from .vocab import END_TOKEN, PAD_ID, Vocabulary, pad_captions, tokenize
from .attngan_layout import AttnGANDataset
from .attngan_skips import BadDataError
from .caption_folder import CaptionFolderDataset
from .safe_pickle import UnsafePickleError, load_pickle

__all__ = [
    "BACKGROUNDS", "COLOURS", "GRIDS", "grid_positions", "MAX_CAPTION_WORDS", "NUM_CLASSES", "POSITIONS", "SHAPES", "SIZES",
    "WORD_CLASSES", "caption_word_objects",
    "Scene", "ShapeObject", "ShapesDataset", "class_id_of", "collate_shapes", "make_captions",
    "object_mask_for_word", "parse_background", "parse_caption", "render_scene", "sample_scene",
    "shapes_vocabulary", "to_tensor", "make_grid_image", "save_image_grid", "to_uint8_images",
    "END_TOKEN", "PAD_ID", "Vocabulary", "pad_captions", "tokenize",
    "AttnGANDataset", "BadDataError", "CaptionFolderDataset", "UnsafePickleError", "load_pickle",
]
