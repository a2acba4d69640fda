"""Datasets and text handling: the built-in shapes dataset, the vocabulary, image grids."""
from .grid import make_grid_image, save_image_grid, to_uint8_images
from .shapes import (
    BACKGROUNDS, COLOURS, MAX_CAPTION_WORDS, NUM_CLASSES, POSITIONS, SHAPES, SIZES, Scene,
    ShapeObject, ShapesDataset, class_id_of, collate_shapes, make_captions, object_mask_for_word,
    parse_background, parse_caption, render_scene, sample_scene, shapes_vocabulary, to_tensor,
)
from .vocab import END_TOKEN, PAD_ID, Vocabulary, pad_captions, tokenize

__all__ = [
    "BACKGROUNDS", "COLOURS", "MAX_CAPTION_WORDS", "NUM_CLASSES", "POSITIONS", "SHAPES", "SIZES",
    "Scene", "ShapeObject", "ShapesDataset", "class_id_of", "collate_shapes", "make_captions",
    "object_mask_for_word", "parse_background", "parse_caption", "render_scene", "sample_scene",
    "shapes_vocabulary", "to_tensor", "make_grid_image", "save_image_grid", "to_uint8_images",
    "END_TOKEN", "PAD_ID", "Vocabulary", "pad_captions", "tokenize",
]
