# xsam_ros_fix_python_include_dirs()
#
# Work-around for the ROS 2 wheels on PyPI (ros-std-msgs, ros-sensor-msgs, ...).
#
# Those wheels are built in a manylinux container, and the CMake targets they export
# (e.g. std_msgs::std_msgs__rosidl_generator_py) carry that container's include
# directories in INTERFACE_INCLUDE_DIRECTORIES:
#
#   /opt/python/cp311-cp311/include/python3.11
#   /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
#
# Those paths do not exist on the machine that installed the wheels, and CMake refuses
# to generate any target that links against an imported target with a non-existent
# include directory ("Imported target ... includes non-existent path").
#
# This function rewrites, on every imported target of the calling directory, each
# non-existent entry that is a Python include directory to this build's
# Python3_INCLUDE_DIRS and each non-existent NumPy include directory to
# Python3_NumPy_INCLUDE_DIRS. Nothing on the system is created or changed.
# On a regular ROS 2 install (apt, source build) every path exists and the function
# changes nothing. Call it after every find_package() and rosidl_generate_interfaces(),
# i.e. just before ament_package(): CMake checks the paths at generate time.
#
# Requires CMake >= 3.21 (directory property IMPORTED_TARGETS); on older CMake it is a
# no-op (those only occur with apt ROS installs, which do not need it).

function(xsam_ros_fix_python_include_dirs)
  if(CMAKE_VERSION VERSION_LESS 3.21)
    return()
  endif()
  get_property(_targets DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)

  set(_python_found FALSE)
  set(_fixed "")
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs "${_target}" INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new_dirs "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        # generator expressions and existing paths are left alone
        list(APPEND _new_dirs "${_dir}")
        continue()
      endif()
      set(_kind "")
      if(_dir MATCHES "/numpy/(_core/|core/)?include$")
        set(_kind "numpy")
      elseif(_dir MATCHES "/include/python3\\.[0-9]+[a-z]*$")
        set(_kind "python")
      endif()
      if(_kind STREQUAL "")
        # not a Python path: not ours to guess, CMake will report it
        list(APPEND _new_dirs "${_dir}")
        continue()
      endif()
      if(NOT _python_found)
        # same search as rosidl_generator_py does
        set(Python3_FIND_UNVERSIONED_NAMES FIRST)
        find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
        set(_python_found TRUE)
      endif()
      if(_kind STREQUAL "numpy")
        list(APPEND _new_dirs ${Python3_NumPy_INCLUDE_DIRS})
      else()
        list(APPEND _new_dirs ${Python3_INCLUDE_DIRS})
      endif()
      set(_changed TRUE)
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _new_dirs)
      set_target_properties("${_target}" PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new_dirs}")
      list(APPEND _fixed "${_target}")
    endif()
  endforeach()

  if(_fixed)
    list(LENGTH _fixed _count)
    message(STATUS "xsam_ros: rewrote the non-existent Python/NumPy include directories of "
      "${_count} imported targets (PyPI ROS wheels) to ${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
  endif()
endfunction()
